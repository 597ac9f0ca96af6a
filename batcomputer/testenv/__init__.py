"""A real Kubernetes control plane on loopback, for end-to-end tests and the demo.

etcd, kube-apiserver (TLS, RBAC, service-account tokens), kube-controller-manager,
kube-scheduler and kwok (simulated nodes), built from pinned sources by
``hack/build-controlplane.sh`` and started as child processes; plus a "process
node" whose kubelet is `batcomputer.testenv.podlet`: it runs each pod's container
as a real local process on its own loopback IP and reports readiness from the
pod's own readiness probe.
"""
