#!/usr/bin/env bash
# Issue 18: the data model and errors move into the leaf package cmri_release/core/. Re-runnable (idempotent) on any
# branch made before the move: moves the files if they are still at the old place, then rewrites every import
# (absolute dotted names anywhere, in code, tests, benchmarks, scripts and docs; relative ones inside cmri_release).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
MODULES="cohort|sliceset|labels|splits|errors"
for m in cohort sliceset labels splits errors; do
    if [ -f "cmri_release/$m.py" ]; then git mv "cmri_release/$m.py" "cmri_release/core/$m.py"; fi
done
# cmri_release.errors -> cmri_release.core.errors (also cmri_release/errors.py in prose)
git ls-files -z -- '*.py' '*.md' '*.toml' '*.sh' '*.cfg' '*.txt' ':!scripts/move_core.sh' | xargs -0 sed -E -i \
    -e "s/\bcmri_release\.($MODULES)\b/cmri_release.core.\1/g" \
    -e "s#\bcmri_release/($MODULES)\.py\b#cmri_release/core/\1.py#g"
# from .errors import / from ..errors import, in the application (not inside core, where they stay siblings)
git ls-files -z -- 'cmri_release/*.py' | grep -zv '^cmri_release/core/' | xargs -0 sed -E -i \
    -e "s/^(\s*from \.+)($MODULES)( import)/\1core.\2\3/"
# inside core, the moved modules are siblings: from ..errors -> from .errors
git ls-files -z -- 'cmri_release/core/*.py' | xargs -0 sed -E -i -e "s/^(\s*from )\.\.($MODULES)( import)/\1.\2\3/"
