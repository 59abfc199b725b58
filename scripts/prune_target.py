"""Removes what older builds left in a cargo target directory: of each executable in
`<profile>/deps` (test binaries, which are the large files), all but the newest, and the
incremental caches. Run by `.ci/run` when it ends, so a target directory kept between runs
does not grow by a set of test binaries every run. Usage: prune_target.py TARGET_DIR"""
import collections
import os
import shutil
import sys


def prune(target):
    freed = 0
    for profile in ("debug", "release"):
        deps = os.path.join(target, profile, "deps")
        if not os.path.isdir(deps):
            continue
        versions = collections.defaultdict(list)
        for name in os.listdir(deps):
            path = os.path.join(deps, name)
            if "." in name or not os.path.isfile(path) or not os.access(path, os.X_OK):
                continue
            versions[name.rsplit("-", 1)[0]].append((os.path.getmtime(path), path))
        for paths in versions.values():
            for _, path in sorted(paths)[:-1]:
                freed += os.path.getsize(path)
                os.remove(path)
        incremental = os.path.join(target, profile, "incremental")
        if os.path.isdir(incremental):
            shutil.rmtree(incremental, ignore_errors=True)
    print(f"pruned {freed / 1e9:.1f} GB of old test binaries from {target}")


if __name__ == "__main__":
    prune(sys.argv[1])
