-- Run by t86_pgwire with the real psql, through a follower; output compared with script.out.
CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL, qty INTEGER DEFAULT 0, price NUMERIC(8,2), added DATE);
CREATE INDEX items_name ON items (name);
INSERT INTO items VALUES (1, 'apple', 3, 0.5, '2024-01-01'), (2, 'pear', 5, 0.75, NULL);
INSERT INTO items (id, name) VALUES (3, 'fig');
INSERT INTO items VALUES (1, 'dup', 1, 1, NULL);
BEGIN;
UPDATE items SET qty = qty + 1 WHERE id = 3;
INSERT INTO items VALUES (4, 'kiwi', 8, 1.25, '2024-03-01');
COMMIT;
SELECT * FROM items ORDER BY id;
SELECT name, qty * 2 AS double_qty FROM items WHERE qty > 2 ORDER BY name;
SELECT * FROM missing;
SELECT 1 / 0;
SET consistency = 'lease';
SHOW consistency;
\dt
\d items
