#!/usr/bin/env bash
# Release rules for the SQL of switchboard (docs/releasing.md), checked without a server:
#  1. a released version's install script, versions/switchboard--X.sql, is frozen: it equals the
#     first version of it committed to git (when this is a git checkout);
#  2. if the control file's default_version is released (its file is in versions/), the install
#     script built from src/sql/*.sql equals that file: changing src/sql needs a new version;
#  3. the upgrade scripts in versions/ lead from every released version to default_version.
# Usage: scripts/check_versions.sh   (exit 1 with one line per broken rule)
set -euo pipefail
cd "$(dirname "$0")/.."
ext=switchboard
default="$(sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\{0,1\}\([^' ]*\)'\{0,1\}.*/\1/p" "$ext.control")"
[ -n "$default" ] || { echo "check_versions: no default_version in $ext.control" >&2; exit 1; }

errors=0
fail() { echo "check_versions: $*" >&2; errors=$((errors + 1)); }

released=()
for f in versions/"$ext"--*.sql; do
	[ -e "$f" ] || continue
	v="${f#versions/$ext--}"; v="${v%.sql}"
	case "$v" in *--*) continue ;; esac   # an upgrade script
	released+=("$v")
done
[ ${#released[@]} -gt 0 ] || fail "no released install script in versions/"

# 1. frozen files
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	for v in "${released[@]}"; do
		f="versions/$ext--$v.sql"
		first="$(git log --diff-filter=A --format=%H -- "$f" | tail -n 1)"
		[ -n "$first" ] || continue    # being released in this (uncommitted) change
		if ! git show "$first:$f" | cmp -s - "$f"; then
			fail "$f was changed after its release in ${first:0:10}; released scripts are frozen: put the change in a new version's upgrade script"
		fi
	done
else
	echo "check_versions: not a git checkout: frozen files not compared with their release"
fi

# 2. the built install script of a released default_version
built="$(mktemp)"; trap 'rm -f "$built"' EXIT
# build.mk's SQL_PARTS in byte order of their names, as both builds concatenate them.
sql_parts="$(sed -n 's/^SQL_PARTS[[:space:]]*=[[:space:]]*//p' build.mk)"
[ -n "$sql_parts" ] || { echo "check_versions: no SQL_PARTS in build.mk" >&2; exit 1; }
# shellcheck disable=SC2086  # the value is a glob
cat $(printf '%s\n' $sql_parts | LC_ALL=C sort) > "$built"
if [ -e "versions/$ext--$default.sql" ] && ! cmp -s "$built" "versions/$ext--$default.sql"; then
	fail "src/sql/*.sql no longer builds the released $default (versions/$ext--$default.sql): raise default_version in $ext.control and add versions/$ext--$default--<new>.sql"
	diff -u "versions/$ext--$default.sql" "$built" | head -n 40 >&2 || true
fi

# 3. every released version reaches default_version through upgrade scripts
reaches() {  # breadth-first over versions/ext--from--to.sql
	local todo=("$1") seen=" $1 " v f to
	while [ ${#todo[@]} -gt 0 ]; do
		v="${todo[0]}"; todo=("${todo[@]:1}")
		[ "$v" = "$default" ] && return 0
		for f in versions/"$ext--$v"--*.sql; do
			[ -e "$f" ] || continue
			to="${f#versions/$ext--$v--}"; to="${to%.sql}"
			case "$seen" in *" $to "*) ;; *) seen="$seen$to "; todo+=("$to") ;; esac
		done
	done
	return 1
}
for v in "${released[@]}"; do
	reaches "$v" || fail "no upgrade path from released $v to $default: add versions/$ext--$v--$default.sql"
done

# 4. the release metadata name default_version: META.json (PGXN Meta spec 1.0.0),
#    CHANGELOG.md and debian/changelog.
if ! python3 - "$default" <<'EOF'
import json, re, sys
default = sys.argv[1]
semver = default + ".0" * (2 - default.count("."))   # PGXN versions are semantic: 0.2 -> 0.2.0
problems = []
try:
    meta = json.load(open("META.json"))
except (OSError, ValueError) as e:
    meta = {}
    problems.append("META.json: %s" % e)
for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
    if key not in meta:
        problems.append("META.json: required key %r missing" % key)
if meta.get("meta-spec", {}).get("version") != "1.0.0":
    problems.append("META.json: meta-spec version must be 1.0.0")
if meta and meta.get("version") != semver:
    problems.append("META.json: version %r, default_version is %s (expected %s)" % (meta.get("version"), default, semver))
for name, p in meta.get("provides", {}).items():
    for key in ("file", "version"):
        if key not in p:
            problems.append("META.json: provides.%s.%s missing" % (name, key))
    if p.get("version") not in (None, semver):
        problems.append("META.json: provides.%s.version %r, expected %s" % (name, p.get("version"), semver))
semver_re = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z-]+)?$")
if meta.get("version") and not semver_re.match(meta["version"]):
    problems.append("META.json: version %r is not a semantic version" % meta["version"])
if not re.search(r"^## %s\b" % re.escape(default), open("CHANGELOG.md").read(), re.M):
    problems.append("CHANGELOG.md: no '## %s' section" % default)
first = open("debian/changelog").readline()
m = re.match(r"^\S+ \(([^)]+)\)", first)
if not m or m.group(1).split("-")[0] != default:
    problems.append("debian/changelog: top entry %r, expected version %s" % (m and m.group(1), default))
for p in problems:
    print("check_versions: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
then
	errors=$((errors + 1))
fi

if [ $errors -gt 0 ]; then
	exit 1
fi
echo "check_versions: released ${released[*]}; default $default; upgrade paths ok"
