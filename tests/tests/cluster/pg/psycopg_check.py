"""psycopg 3 against a QuorumDB node: parameters, fetches, SQLSTATEs (run by t86_pgwire)."""
import sys

import psycopg

host, port = sys.argv[1], sys.argv[2]
with psycopg.connect(host=host, port=port, user="app", dbname="quorumdb", autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE py (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION)")
        cur.executemany("INSERT INTO py VALUES (%s, %s, %s)", [(1, "a", 0.5), (2, "b'q", None), (3, None, 2.0)])
        cur.execute("SELECT id, name, score FROM py WHERE id >= %s ORDER BY id", (1,))
        rows = cur.fetchall()
        assert rows == [(1, "a", 0.5), (2, "b'q", None), (3, None, 2.0)], rows
        codes = []
        for sql in ["INSERT INTO py VALUES (1, 'x', 1)", "SELECT 1/0"]:
            try:
                cur.execute(sql)
            except psycopg.Error as e:
                codes.append(e.diag.sqlstate)
        print(f"ok {len(rows)} rows; {'; '.join(codes)}")
