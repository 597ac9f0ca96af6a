#!/usr/bin/env bash
# The same scenario as `make demo`, on a real kind cluster with real images.
# For users with Docker; it is NOT run by CI (the CI machines have no Docker engine).
#
#   hack/kind-e2e.sh            # create cluster "batcomputer", build, install, run, keep it
#   KEEP=0 hack/kind-e2e.sh     # delete the cluster at the end
#
# Needs: docker, kind, kubectl, and `make setup` (for `batcomputer train`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER:-batcomputer}"
KEEP="${KEEP:-1}"
VERSION="$(cat "${ROOT}/VERSION")"
SERVER_IMAGE="batcomputer-server:${VERSION}"
OPERATOR_IMAGE="batcomputer-operator:${VERSION}"
NS="demo"
BATCOMPUTER="${ROOT}/.venv/bin/batcomputer"
WORK="$(mktemp -d)"
PIDS=()

say() { printf '\n==> %s\n' "$*"; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "${pid}" 2>/dev/null || true; done
  rm -rf "${WORK}"
  if [[ "${KEEP}" == "0" ]]; then kind delete cluster --name "${CLUSTER}"; fi
}
trap cleanup EXIT

for tool in docker kind kubectl; do
  command -v "${tool}" >/dev/null || { echo "${tool} is required" >&2; exit 1; }
done
[[ -x "${BATCOMPUTER}" ]] || { echo "run 'make setup' first" >&2; exit 1; }

say "kind cluster ${CLUSTER}"
if ! kind get clusters | grep -qx "${CLUSTER}"; then
  kind create cluster --name "${CLUSTER}" --wait 120s
fi
kubectl config use-context "kind-${CLUSTER}"

say "Building and loading ${SERVER_IMAGE} and ${OPERATOR_IMAGE}"
ENGINE=docker "${ROOT}/hack/build-images.sh"
kind load docker-image --name "${CLUSTER}" "${SERVER_IMAGE}" "${OPERATOR_IMAGE}"

say "Installing the operator: kubectl apply -k manifests/"
kubectl apply -k "${ROOT}/manifests"
kubectl -n batcomputer-system set env deployment/batcomputer-operator \
  "BATCOMPUTER_OPERATOR_SERVER_IMAGE=${SERVER_IMAGE}" "BATCOMPUTER_OPERATOR_IMAGE_PULL_POLICY=Never"
kubectl -n batcomputer-system set image deployment/batcomputer-operator "operator=${OPERATOR_IMAGE}"
kubectl -n batcomputer-system rollout status deployment/batcomputer-operator --timeout=180s

say "Training crime 1.1.0 and 2.0.0"
"${BATCOMPUTER}" -q generate-data "${WORK}/data"
"${BATCOMPUTER}" -q train "${WORK}/data" --registry "${WORK}/registry" --version 1.1.0
"${BATCOMPUTER}" -q train "${WORK}/data" --registry "${WORK}/registry" --version 2.0.0 \
  --features force,crime,month,place

say "Copying the registry to a PersistentVolumeClaim (pvc://model-store/...)"
kubectl create namespace "${NS}" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "${NS}" apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: model-store}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: model-loader}
spec:
  containers:
    - name: loader
      image: ${SERVER_IMAGE}
      imagePullPolicy: Never
      command: [sleep, "3600"]
      volumeMounts: [{name: store, mountPath: /models}]
      securityContext: {runAsUser: 0}
  volumes:
    - name: store
      persistentVolumeClaim: {claimName: model-store}
YAML
kubectl -n "${NS}" wait --for=condition=Ready pod/model-loader --timeout=180s
kubectl -n "${NS}" cp "${WORK}/registry/crime" model-loader:/models/crime
kubectl -n "${NS}" delete pod model-loader --wait=true

say "Applying a BatModel with two MAJOR versions"
kubectl -n "${NS}" apply -f - <<YAML
apiVersion: batcomputer.io/v1alpha1
kind: BatModel
metadata: {name: crime}
spec:
  versions:
    - {version: 1.1.0, artifact: "pvc://model-store/crime/1.1.0"}
    - {version: 2.0.0, artifact: "pvc://model-store/crime/2.0.0"}
  promoted: 1.1.0
  replicas: 2
YAML
kubectl -n "${NS}" wait --for=condition=Ready bm/crime --timeout=300s
kubectl -n "${NS}" get bm,deploy,svc

predict() {  # service local-port json
  kubectl -n "${NS}" port-forward "svc/$1" "$2:80" >/dev/null 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$2/healthz" >/dev/null && break; sleep 0.2; done
  printf '%s %s\n  -> ' "$1" "$3"
  curl -fsS -X POST "http://127.0.0.1:$2/api/predict" -H 'Content-Type: application/json' -d "$3"
  echo
}

say "Predictions through kubectl port-forward"
predict crime-v1 18081 '{"force": "Kent Police", "crime": "Drugs", "month": 6}'
predict crime-v2 18082 '{"force": "Kent Police", "crime": "Drugs", "month": 6, "place": "Supermarket"}'

say "Promoting 2.0.0"
kubectl -n "${NS}" patch bm crime --type=merge -p '{"spec":{"promoted":"2.0.0"}}'
kubectl -n "${NS}" wait --for=jsonpath='{.status.serving}'=2.0.0 bm/crime --timeout=120s
predict crime 18083 '{"force": "Kent Police", "crime": "Drugs", "month": 6, "place": "Supermarket"}'
kubectl -n "${NS}" get bm crime -o wide

say "Done (cluster kind-${CLUSTER} kept unless KEEP=0)"
