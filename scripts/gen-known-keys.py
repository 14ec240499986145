#!/usr/bin/env python3
"""GitLab Runner's config keys, for Flotilla's compatibility table (src/config/known_keys*.rs).

Two steps, both deterministic:

  scripts/gen-known-keys.py extract GITLAB_RUNNER_CHECKOUT > tests/fixtures/gitlab-runner-19-keys.txt
      Walks the `toml:"..."` tags of the structs reachable from `common.Config` (common/config.go
      and the structs it embeds or points to in other packages: cacheconfig, referees, monitoring,
      docker credentials, ...) and prints one `SECTION KEY` line per key, SECTION being the dotted
      TOML path of the table (`.` for the top level; arrays of tables use their path too).
      The first line names the version read (the checkout's VERSION file).

  scripts/gen-known-keys.py rust tests/fixtures/gitlab-runner-19-keys.txt > src/config/known_keys_gitlab.rs
      Turns the committed extract into the Rust table Flotilla reads (`gitlab_keys(section)`).

The test `config::known_keys::tests::gitlab_table_matches_the_extract` fails when the Rust file
and the extract differ, so regenerate both with these two commands after a GitLab Runner upgrade.
"""

import os
import re
import sys

MODULE = "gitlab.com/gitlab-org/gitlab-runner/"
ROOT = ("common", "Config")

STRUCT_START = re.compile(r"^type\s+(\w+)\s+struct\s*{\s*$")
TYPE_DECL = re.compile(r"^type\s+(\w+)\s+(\S.*)$")
IMPORT_LINE = re.compile(r'^\s*(?:(\w+)\s+)?"([^"]+)"\s*$')
FIELD = re.compile(r"^\s*(\w+(?:\s*,\s*\w+)*)\s+([^`]+?)\s*(`[^`]*`)?\s*(//.*)?$")
EMBEDDED = re.compile(r"^\s*(\*?[\w.]+)\s*(`[^`]*`)?\s*(//.*)?$")
TOML_TAG = re.compile(r'toml:"([^"]*)"')


def read_package_files(root):
    """(dir, path) of every non-test Go file outside vendored and generated trees."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("vendor", "testdata", ".git", "docs")]
        for name in filenames:
            if name.endswith(".go") and not name.endswith("_test.go"):
                yield os.path.relpath(dirpath, root), os.path.join(dirpath, name)


def parse_imports(text):
    """alias -> package dir (relative to the module) for the module's own imports."""
    imports = {}
    block = re.search(r"^import\s*\((.*?)^\)", text, re.S | re.M)
    lines = block.group(1).splitlines() if block else []
    lines += re.findall(r'^import\s+((?:\w+\s+)?"[^"]+")\s*$', text, re.M)
    for line in lines:
        m = IMPORT_LINE.match(line)
        if not m or not m.group(2).startswith(MODULE):
            continue
        path = m.group(2)[len(MODULE):]
        imports[m.group(1) or path.rsplit("/", 1)[-1]] = path
    return imports


def parse_structs(text):
    """name -> list of field lines (top level of the struct body only)."""
    structs, others = {}, {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = STRUCT_START.match(lines[i])
        if m:
            body, depth = [], 1
            i += 1
            while i < len(lines) and depth > 0:
                line = lines[i]
                opens, closes = line.count("{"), line.count("}")
                if depth == 1 and not (line.strip() == "}" and closes == 1):
                    body.append(line)
                depth += opens - closes
                i += 1
            structs[m.group(1)] = body
            continue
        m = TYPE_DECL.match(lines[i])
        if m:
            others[m.group(1)] = m.group(2)
        i += 1
    return structs, others


def load(root):
    """(dir, name) -> (field lines, imports of its file)."""
    index = {}
    for pkg, path in read_package_files(root):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        structs, _ = parse_structs(text)
        if not structs:
            continue
        imports = parse_imports(text)
        for name, body in structs.items():
            index[(pkg, name)] = (body, imports)
    return index


def resolve(index, pkg, imports, typ):
    """The (dir, name) of a struct type expression, or None for a leaf (scalar, map, foreign)."""
    typ = typ.strip()
    while True:
        if typ.startswith("*"):
            typ = typ[1:]
        elif typ.startswith("[]"):
            typ = typ[2:]
        else:
            break
    if typ.startswith("map[") or typ.startswith("func") or typ.startswith("chan"):
        return None
    if "." in typ:
        alias, name = typ.split(".", 1)
        if alias not in imports:
            return None
        key = (imports[alias], name)
    else:
        key = (pkg, typ)
    return key if key in index else None


def walk(index, key, section, out, stack):
    if key in stack:
        return
    body, imports = index[key]
    pkg = key[0]
    for line in body:
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        m = EMBEDDED.match(line)
        if m and len(stripped.split("`")[0].split("//")[0].split()) == 1:
            tag = TOML_TAG.search(m.group(2) or "")
            if tag and tag.group(1).split(",")[0] == "-":
                continue
            target = resolve(index, pkg, imports, m.group(1))
            if target:
                walk(index, target, section, out, stack + [key])
            continue
        m = FIELD.match(line)
        if not m:
            continue
        names, typ, tag = m.group(1), m.group(2), m.group(3) or ""
        if not names[0].isupper():
            continue
        t = TOML_TAG.search(tag)
        for field in [n.strip() for n in names.split(",")]:
            toml_name = t.group(1).split(",")[0] if t else ""
            if toml_name == "-":
                continue
            name = toml_name or field
            out.add((section, name))
            target = resolve(index, pkg, imports, typ)
            if target:
                child = name if section == "." else f"{section}.{name}"
                walk(index, target, child, out, stack + [key])


def extract(root):
    index = load(root)
    out = set()
    walk(index, ROOT, ".", out, [])
    with open(os.path.join(root, "VERSION"), encoding="utf-8") as f:
        version = f.read().strip()
    print(f"# GitLab Runner {version}: keys of common.Config and every struct it reaches")
    for section, key in sorted(out):
        print(f"{section} {key}")


def read_extract(path):
    sections = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            section, key = line.split(" ", 1)
            sections.setdefault(section, []).append(key)
    return sections


def rust(path):
    sections = read_extract(path)
    print("//! GENERATED by `scripts/gen-known-keys.py rust tests/fixtures/gitlab-runner-19-keys.txt`:")
    print("//! every key of GitLab Runner's config structs, by TOML section (`.` is the top level).")
    print("//! Do not edit; regenerate (see the script's header).")
    print()
    print("/// The keys GitLab Runner's config structs give the section at `path`, if it has any.")
    print("#[rustfmt::skip]")
    print("pub(super) fn gitlab_keys(path: &str) -> Option<&'static [&'static str]> {")
    print("    Some(match path {")
    for section in sorted(sections):
        keys = ", ".join(f'"{k}"' for k in sorted(sections[section]))
        print(f'        "{section}" => &[{keys}],')
    print("        _ => return None,")
    print("    })")
    print("}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "extract":
        extract(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "rust":
        rust(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
