#!/usr/bin/env bash
# web/build.sh [OUT.js] — builds the page's script from its sources:
#   1. the TypeScript client of the public API, generated from proto/diptych/v1 (buf with
#      protoc-gen-es) into web/src/gen;
#   2. a type check of everything (tsc --noEmit);
#   3. one minified bundle (esbuild), by default service/src/web/assets/app.js, which the
#      binary embeds.
# The npm packages come from `make deps-web` (npm ci of web/package-lock.json into
# $CACHE/web-deps); nothing else is fetched. Both outputs are committed, and
# service/tests/web_bundle.rs checks that they are what this script makes of the sources.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deps=${WEB_DEPS:-${CACHE:-$HOME/.cache/diptych}/web-deps}
out=${1:-$here/../service/src/web/assets/app.js}
if [ ! -x "$deps/node_modules/.bin/esbuild" ]; then
	echo "web/build.sh: no npm packages in $deps: run \`make deps-web\`" >&2
	exit 1
fi
cd "$here"
ln -sfn "$deps/node_modules" node_modules
export PATH=$here/node_modules/.bin:$PATH
rm -rf src/gen
buf generate
tsc -p tsconfig.json
esbuild src/main.ts --bundle --minify --format=iife --target=es2022 --charset=utf8 \
	--legal-comments=none --log-level=warning --outfile="$out"
