#!/usr/bin/env bash
# The install steps that the Makefile and the Dockerfile share, so that what `make run` and
# `make test` use and what the images ship cannot drift apart. Every step is skipped when what it
# installs is already there.
#
#   install-deps.sh ort-version           print the ONNX Runtime version diptych is built for
#   install-deps.sh ort DIR [cpu|gpu]     the ONNX Runtime shared libraries (libonnxruntime*.so*),
#                                         unpacked into DIR from the onnxruntime (cpu, default) or
#                                         onnxruntime-gpu (gpu: adds the CUDA execution provider)
#                                         wheel on PyPI; DIR/libonnxruntime.so links to the library
#   install-deps.sh build-tools           cmake (apt), which builds the CharLS (JPEG-LS) decoder
#   install-deps.sh jpeg12-dev            libgdcm-dev (apt): GDCM's 12-bit IJG library and headers,
#                                         which the DICOM adapter links to decode 12-bit lossy JPEG
#   install-deps.sh test-peers            the DICOM peers of the tests and benchmarks (apt): dcmtk,
#                                         GDCM's tools, Orthanc, and libgdcm-dev; and the browser of
#                                         the page's test: chromium and chromium-driver; nats-server,
#                                         the JetStream cluster of the cluster test; rsyslog,
#                                         the syslog receiver of the audit test
#   install-deps.sh node                  Node and npm (apt), unless a node is already installed
#   install-deps.sh image-libs BIN DIR    copy the shared libraries BIN links beyond the C and C++
#                                         runtimes (GDCM's 12-bit JPEG library) into DIR: the final
#                                         image stage gets them without apt or build tools
#
# Environment: PYTHON (default python3) runs pip; apt runs through sudo when not root.
set -euo pipefail

ORT_VERSION=1.31.0
PYTHON=${PYTHON:-python3}

die() {
	echo "install-deps.sh: $*" >&2
	exit 1
}

# apt-get install PACKAGES, as the Makefile always did: update first, non-interactive, sudo
# when not root.
apt_install() {
	local sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@"
}

# ort DIR [cpu|gpu]
ort() {
	local dir=${1:?usage: install-deps.sh ort DIR [cpu|gpu]} flavour=${2:-cpu} package
	case $flavour in
	cpu) package=onnxruntime ;;
	gpu) package=onnxruntime-gpu ;;
	*) die "ort: flavour '$flavour' is neither cpu nor gpu" ;;
	esac
	local lib=$dir/libonnxruntime.so.$ORT_VERSION
	if [ -e "$lib" ]; then
		return 0
	fi
	mkdir -p "$dir"
	local work
	work=$(mktemp -d "$dir/.download.XXXXXX")
	# shellcheck disable=SC2064 # $work is meant to expand now
	trap "rm -rf '$work'" EXIT
	"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: "$package==$ORT_VERSION" -d "$work/wheel"
	local wheels=("$work"/wheel/*.whl)
	if [ ${#wheels[@]} != 1 ] || [ ! -f "${wheels[0]}" ]; then
		die "ort: expected one $package wheel, found: ${wheels[*]}"
	fi
	"$PYTHON" -m zipfile -e "${wheels[0]}" "$work/unpacked"
	cp "$work"/unpacked/onnxruntime/capi/libonnxruntime*.so* "$dir/"
	rm -rf "$work"
	[ -s "$lib" ] || die "ort: the $package wheel held no libonnxruntime.so.$ORT_VERSION"
	ln -sf "libonnxruntime.so.$ORT_VERSION" "$dir/libonnxruntime.so"
}

build_tools() {
	[ -x /usr/bin/cmake ] || apt_install cmake
}

JPEG12_HEADER=/usr/include/gdcm-3.0/gdcmjpeg/12/jpeglib.h

jpeg12_dev() {
	[ -e "$JPEG12_HEADER" ] || apt_install libgdcm-dev
}

test_peers() {
	local t
	for t in /usr/bin/storescu /usr/bin/gdcmconv /usr/sbin/Orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so "$JPEG12_HEADER" /usr/bin/chromium /usr/bin/chromedriver /usr/sbin/nats-server /usr/sbin/rsyslogd; do
		if [ ! -e "$t" ]; then
			apt_install dcmtk libgdcm-tools libgdcm-dev orthanc orthanc-dicomweb chromium chromium-driver nats-server rsyslog
			return 0
		fi
	done
}

node_npm() {
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		apt_install nodejs npm
	fi
}

# image-libs BIN DIR
image_libs() {
	local bin=${1:?usage: install-deps.sh image-libs BIN DIR} dir=${2:?usage: install-deps.sh image-libs BIN DIR}
	local path
	path=$(ldd "$bin" | awk '$1 ~ /^libgdcmjpeg12\.so/ { print $3 }')
	[ -n "$path" ] && [ -e "$path" ] ||
		die "image-libs: $bin does not link GDCM's 12-bit JPEG library: it was built without libgdcm-dev (install-deps.sh jpeg12-dev) and would refuse 12-bit lossy JPEG"
	mkdir -p "$dir"
	# The soname, with the library's content (the file it names is a symbolic link).
	cp -L "$path" "$dir/$(basename "$path")"
}

case ${1:-} in
ort-version) echo "$ORT_VERSION" ;;
ort) shift && ort "$@" ;;
build-tools) build_tools ;;
jpeg12-dev) jpeg12_dev ;;
test-peers) test_peers ;;
node) node_npm ;;
image-libs) shift && image_libs "$@" ;;
*) die "usage: install-deps.sh ort-version | ort DIR [cpu|gpu] | build-tools | jpeg12-dev | test-peers | node | image-libs BIN DIR" ;;
esac
