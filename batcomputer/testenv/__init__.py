"""A real Kubernetes control plane on loopback, for end-to-end tests and the demo.

etcd, kube-apiserver (TLS, RBAC, service-account tokens), kube-controller-manager,
kube-scheduler and kwok (simulated nodes), built from pinned sources by
``hack/build-controlplane.sh`` and started as child processes; plus a node whose
kubelet is `batcomputer.testenv.podlet`: it runs each pod's container as a podman
container from its image (or as a local process), on its own loopback address, and
reports readiness from the pod's own probes.
"""
