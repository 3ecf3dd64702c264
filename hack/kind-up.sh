#!/usr/bin/env bash
# make cluster-up: evalflow's cluster on a machine with a Docker engine, kind and
# kubectl. A kind cluster (kind-config.yaml) whose nodes pull from a registry on
# localhost:5001 (kind's local-registry pattern), Knative Serving with Kourier as its
# networking layer, and Knative Eventing (core, in-memory channel, MT channel
# broker), at pinned versions; it waits for each Deployment and for Knative's
# webhooks to admit objects. Then: make deploy REGISTRY=localhost:5001/evalflow
# INGRESS_PORT=31080 PLAIN_HTTP=1 POD_REGISTRY=kind-registry:5000/evalflow (the
# functions' images are pulled as localhost:5001/..., which
# containerd on the nodes maps to the registry container).
#
# Not run on the project's machines (no Docker engine); the same Knative release
# (v1.20 = knative.dev/eventing v0.50.0) runs on the project's own node in make test.
set -euo pipefail
KIND=${KIND_VERSION:-v0.33.0} # kind-config.yaml names its node image of Kubernetes 1.34
KNATIVE=${KNATIVE_VERSION:-v1.20.0}
KOURIER=${KOURIER_VERSION:-v1.20.0}
REGISTRY_IMAGE=${REGISTRY_IMAGE:-docker.io/library/registry:2.8.3}
NAME=evalflow
REG=kind-registry
cd "$(dirname "$0")/.."
for tool in docker kind kubectl; do
  command -v $tool >/dev/null || { echo "cluster-up needs $tool" >&2; exit 1; }
done
kind version | grep -q "kind $KIND " || echo "cluster-up: pinned to kind $KIND; this is $(kind version)" >&2

if [ "$(docker inspect -f '{{.State.Running}}' $REG 2>/dev/null || true)" != true ]; then
  docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge --name $REG "$REGISTRY_IMAGE"
fi
if ! kind get clusters | grep -qx $NAME; then
  kind create cluster --config kind-config.yaml
fi
# Each node maps localhost:5001 to the registry container.
for node in $(kind get nodes --name $NAME); do
  docker exec "$node" mkdir -p /etc/containerd/certs.d/localhost:5001
  printf '[host."http://%s:5000"]\n' $REG | docker exec -i "$node" cp /dev/stdin /etc/containerd/certs.d/localhost:5001/hosts.toml
done
docker network connect kind $REG 2>/dev/null || true
kubectl apply -f - <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: local-registry-hosting, namespace: kube-public}
data:
  localRegistryHosting.v1: |
    host: "localhost:5001"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
YAML

release() { echo "https://github.com/knative/$1/releases/download/knative-$2/$3"; }
# CRDs first, then the rest once they are established.
kubectl apply -f "$(release serving $KNATIVE serving-crds.yaml)" -f "$(release eventing $KNATIVE eventing-crds.yaml)"
kubectl wait --for=condition=Established crd --all --timeout=120s
kubectl apply -f "$(release serving $KNATIVE serving-core.yaml)"
kubectl apply -f "$(release net-kourier $KOURIER kourier.yaml)"
kubectl apply -f "$(release eventing $KNATIVE eventing-core.yaml)"
kubectl apply -f "$(release eventing $KNATIVE in-memory-channel.yaml)"
kubectl apply -f "$(release eventing $KNATIVE mt-channel-broker.yaml)"
for ns in knative-serving kourier-system knative-eventing; do
  kubectl -n $ns wait --for=condition=Available deployment --all --timeout=300s
done
# Kourier answers on the node port kind-config.yaml maps to localhost:31080.
kubectl -n kourier-system patch service kourier --type merge \
  -p '{"spec":{"type":"NodePort","ports":[{"name":"http2","port":80,"targetPort":8080,"nodePort":31080}]}}'
kubectl -n knative-serving patch configmap config-network --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
# NAME.NAMESPACE.localhost reaches localhost:31080 from this machine (RFC 6761).
kubectl -n knative-serving patch configmap config-domain --type merge -p '{"data":{"localhost":""}}'
kubectl -n knative-serving patch configmap config-deployment --type merge \
  -p '{"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local,localhost:5001"}}'
# The webhooks admit objects only once they serve: a dry-run create shows it.
kubectl apply -f eventing/namespace.yaml
for i in $(seq 60); do
  if kubectl create --dry-run=server -f broker/broker.yaml >/dev/null 2>&1 && \
     kubectl create --dry-run=server -f - >/dev/null 2>&1 <<YAML
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: webhook-check, namespace: default}
spec: {template: {spec: {containers: [{image: localhost:5001/none}]}}}
YAML
  then echo "cluster-up: kind, Knative Serving (Kourier) and Eventing $KNATIVE are up"; exit 0; fi
  sleep 2
done
echo "cluster-up: Knative's webhooks do not admit objects" >&2
exit 1
