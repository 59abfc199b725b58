#!/usr/bin/env python3
"""Generates examples/data/cities.csv: made-up cities (names from syllables, seeded, so the
file is the same on every run) for `quorumdb demo` and the loader's examples.

    python3 scripts/gen_cities.py > examples/data/cities.csv
"""
import csv
import random
import sys

rng = random.Random(42)
SYL = ["ka", "lo", "mer", "dun", "vi", "sa", "tor", "bel", "ri", "an", "os", "grim", "ul", "fen", "da", "mo", "ast", "quin"]
COUNTRIES = ["Arvandia", "Belmora", "Corvath", "Dunmere", "Eskaline", "Frostholm", "Galvora", "Hesperin"]
NOTES = ["port city", "old town, walled", 'known as "the white city"', "river crossing\nand market", "", "mining, timber"]

w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow(["id", "name", "country", "population", "latitude", "longitude", "founded", "capital", "note"])
names = set()
capitals = set()
for i in range(1, 301):
    while True:
        name = "".join(rng.choice(SYL) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in names:
            names.add(name)
            break
    country = rng.choice(COUNTRIES)
    capital = country not in capitals and rng.random() < 0.2
    if capital:
        capitals.add(country)
    population = int(rng.lognormvariate(10, 1.3))
    lat = round(rng.uniform(-60, 70), 4)
    lon = round(rng.uniform(-180, 180), 4)
    founded = f"{rng.randint(800, 1990):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    w.writerow([i, name, country, population, lat, lon, founded, "true" if capital else "false", rng.choice(NOTES)])
