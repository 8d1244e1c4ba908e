#!/usr/bin/env bash
# Builds the Kubernetes tools the manifest tests use, from the Go module proxy, into
# .build/tools (or $K8S_TOOLS_DIR): helm, kustomize (what `kubectl kustomize` runs) and
# streamwatch-k8s-validate (deploy/k8s/validate). A tool is rebuilt only when its pinned
# version, or the validator's source, changes. The first build takes about 5 minutes on two
# cores; later runs take a second. `make k8s-tools` runs it.
set -euo pipefail

HELM=helm.sh/helm/v4/cmd/helm@v4.3.2
KUSTOMIZE=sigs.k8s.io/kustomize/kustomize/v5@v5.8.2   # v5.8.3 needs Go 1.27

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${K8S_TOOLS_DIR:-$root/.build/tools}
mkdir -p "$out"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
# one build at a time: `make test` starts one in the background, and the manifest tests'
# own call waits here for it rather than building the same tools beside it
exec 9>"$out/.lock"
flock 9

# install NAME STAMP COMMAND...: run COMMAND unless $out/NAME exists and was built from STAMP.
install() {
	local name=$1 stamp=$2
	shift 2
	if [[ -x "$out/$name" && "$(cat "$out/$name.stamp" 2>/dev/null)" == "$stamp" ]]; then
		return
	fi
	echo "k8s tools: building $name ($stamp)" >&2
	"$@"
	echo "$stamp" >"$out/$name.stamp"
}

install helm "$HELM" env GOBIN="$out" go install "$HELM"
install kustomize "$KUSTOMIZE" env GOBIN="$out" go install "$KUSTOMIZE"
source_hash=$(cd "$here/validate" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
install streamwatch-k8s-validate "validate $source_hash" \
	bash -c "cd '$here/validate' && go build -mod=readonly -o '$out/streamwatch-k8s-validate' ."
