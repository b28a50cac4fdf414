#!/usr/bin/env bash
# Stage DALI for the GPU machine (which has torch but no DALI and no network) in as few carried parts as possible.
#
#   bash infra/gpu/stage.sh [PYTHON_VERSION]      default 3.12, the GPU machine's; writes .gpu/part-1 ... part-N
#
# What it carries: DALI 2.4 (CUDA 13 build), nvImageCodec with its JPEG extensions, nvJPEG, the three NPP libraries
# DALI loads (core, colour conversion, geometry) and DALI's pure-Python needs, unpacked into one site folder and
# slimmed of what a loader never loads: headers, the extension modules of other Python versions, the JPEG 2000 and
# TIFF codecs, nvCOMP, the other NPP libraries, and the static symbol tables of the shared libraries (strip
# --strip-unneeded leaves the dynamic symbols that loading needs). The folder goes into one tar.xz (-9e), split
# into parts small enough that each part plus the working tree fits the 64 MiB a device call carries. Each part
# folder holds PARTS (every part's name and sha256, and the whole archive's), so the device side can say exactly
# which part is missing or damaged. Measured on 2026-11-30: 516 MB unpacked -> 414 MB slimmed -> 165 MB of xz.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
py=${1:-3.12}
dest=${STAGE_DIR:-.gpu}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pip_dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$work/wheels" "$@" 2>&1 | grep -v "is ignored" || true
}
pip_dl nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43 nvidia-npp==13.2.0.93 \
  astunparse==1.6.3 gast==0.7.0 optree makefun 'libcst~=1.8' nvtx
[ "$(ls "$work/wheels" | wc -l)" -eq 10 ] || { echo "stage: expected 10 wheels, got: $(ls "$work/wheels")" >&2; exit 1; }

site="$work/site"
mkdir -p "$site"
for w in "$work"/wheels/*.whl; do
  case "$w" in
    */nvidia_npp-*) unzip -q -o "$w" 'nvidia/cu13/lib/libnppc.so.13' 'nvidia/cu13/lib/libnppicc.so.13' \
      'nvidia/cu13/lib/libnppig.so.13' -d "$site" ;;
    *) unzip -q -o "$w" -d "$site" ;;
  esac
done
tag="cpython-${py/./}-"
rm -rf "$site"/*.data "$site/nvidia/dali/include" "$site/nvidia/__init__.py"
find "$site" -name '*.cpython-3*' ! -name "*${tag}*" -delete
rm -f "$site"/nvidia/nvimgcodec/extensions/lib{nvjpeg2k,nvtiff,tiff}_ext*
before=$(du -sb "$site" | cut -f1)
find "$site" -name '*.so*' -type f -print0 | xargs -0 strip --strip-unneeded
after=$(du -sb "$site" | cut -f1)

# what travels besides the parts: the working tree (tracked and untracked files that git does not ignore)
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
part=$(( (62 << 20) - tree ))
tar cf - -C "$site" . | xz -9e -T0 > "$work/site.tar.xz"
size=$(stat -c %s "$work/site.tar.xz")
rm -rf "$dest"
mkdir -p "$dest"
split -b "$part" -d -a 2 "$work/site.tar.xz" "$work/site.tar.xz."
n=0
for f in "$work"/site.tar.xz.[0-9][0-9]; do
  n=$((n + 1))
  mkdir -p "$dest/part-$n"
  mv "$f" "$dest/part-$n/"
done
{
  echo "archive $(sha256sum "$work/site.tar.xz" | cut -d' ' -f1) $size python$py parts=$n"
  (cd "$dest" && sha256sum part-*/site.tar.xz.* | sed 's#part-[0-9]*/##')
} > "$work/PARTS"
for d in "$dest"/part-*; do cp "$work/PARTS" "$d/"; done

echo "staged for Python $py: $((before >> 20)) MiB unpacked -> $((after >> 20)) MiB slimmed -> $((size >> 20)) MiB xz," \
  "in $n parts of at most $((part >> 20)) MiB (the working tree is $((tree >> 20)) MiB) under $dest/"
echo "On the GPU machine, back to back (it forgets everything after ~30 s idle), with the device tool's run:"
for i in $(seq 1 $((n - 1))); do
  echo "  carry [\"$dest/part-$i\"]: mkdir -p /tmp/stage && cp $dest/part-$i/* /tmp/stage/ && ls /tmp/stage"
done
echo "  carry [\"$dest/part-$n\"]: bash infra/gpu/check.sh $dest/part-$n \$OUT"
