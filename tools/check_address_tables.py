#!/usr/bin/env python3
"""Check data/address/*.txt against the reference implementation's address tables.

Usage: tools/check_address_tables.py [path/to/address_map_helper.json]

Parses the project's word-map tables, builds the merged map per country in the
order of RULES.md section 7.4, builds the same merged maps from the reference JSON
(keys containing '.' dropped, since '.' is a tokenizer delimiter), and compares
them. Exits 0 when all countries match, 1 otherwise. Stdlib only; nothing is
copied out of the reference, it is only compared against.
"""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data", "address")
DEFAULT_REF = os.path.join(REPO, "..", "shared", "vectors", "reference", "address_map_helper.json")

# project file -> reference table name
TABLES = {
    "number_indicators": "NumberIndicators",
    "directional_words": "DirectionalWords",
    "default_street_suffixes": "DefaultStreetSuffixes",
    "us_street_suffixes": "USStreetSuffixes",
    "us_secondary_unit_designators": "USSubBuildingDesignator",
    "it_street_prefixes": "ITStreetPrefixes",
    "fr_street_designators": "FRStreetDesignator",
    "es_street_prefixes": "ESStreetPrefixes",
    "uk_organization_suffixes": "UKOrganizationSuffixes",
    "uk_street_suffixes": "UKStreetSuffixes",
    "uk_sub_building_designators": "UKSubBuildingDesignator",
}

BASE = ["number_indicators", "directional_words"]
DEFAULT_ORDER = BASE + ["default_street_suffixes"]
ORDERS = {
    "US": BASE + ["us_street_suffixes", "us_secondary_unit_designators"],
    "CA": DEFAULT_ORDER,
    "DE": DEFAULT_ORDER,
    "JP": DEFAULT_ORDER,
    "IN": DEFAULT_ORDER,
    "GB": BASE + ["uk_organization_suffixes", "uk_street_suffixes", "uk_sub_building_designators"],
    "FR": BASE + ["fr_street_designators", "default_street_suffixes"],
    "ES": BASE + ["default_street_suffixes", "es_street_prefixes"],
    "IT": BASE + ["default_street_suffixes", "it_street_prefixes"],
}


def parse_table(path):
    """Return (dict key->standard, list of error strings) for one project table file."""
    table, errors = {}, []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{os.path.basename(path)}:{lineno}"
            std, sep, rest = line.partition(": ")
            std = std.strip()
            if not sep or not std or " " in std:
                errors.append(f"{where}: expected 'STANDARD: VARIANT ...'")
                continue
            variants = rest.split()
            if not variants:
                errors.append(f"{where}: no variants for {std}")
            for v in variants:
                if "." in v:
                    errors.append(f"{where}: key {v!r} contains '.' and can never match")
                if v != v.upper():
                    errors.append(f"{where}: key {v!r} is not uppercase")
                if v in table:
                    errors.append(f"{where}: duplicate key {v!r} (already -> {table[v]})")
                table[v] = std
    return table, errors


def load_project():
    tables, errors = {}, []
    for name in TABLES:
        path = os.path.join(DATA, name + ".txt")
        if not os.path.exists(path):
            errors.append(f"missing {path}")
            tables[name] = {}
            continue
        tables[name], errs = parse_table(path)
        errors += errs
    return tables, errors


def load_reference(path):
    with open(path, encoding="utf-8") as f:
        ref = json.load(f)
    tables = {}
    for name, ref_name in TABLES.items():
        m = {}
        for entry in ref[ref_name]:
            for k, v in entry.items():
                if "." not in k:
                    m[k] = v  # later entry wins, as in the reference loop
        tables[name] = m
    return tables


def merge(tables, order):
    merged = {}
    for name in order:
        merged.update(tables[name])
    return merged


def main(argv):
    ref_path = argv[1] if len(argv) > 1 else DEFAULT_REF
    ours, errors = load_project()
    for e in errors:
        print("error:", e)
    ref = load_reference(ref_path)
    ok = not errors
    for country, order in ORDERS.items():
        a, b = merge(ours, order), merge(ref, order)
        if a == b:
            continue
        ok = False
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                print(f"{country}: {k!r}: ours={a.get(k)!r} reference={b.get(k)!r}")
    if not ok:
        print("address tables DO NOT match reference")
        return 1
    print("address tables match reference for " + " ".join(ORDERS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
