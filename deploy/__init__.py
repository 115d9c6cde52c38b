"""Cluster deployment: Kubernetes manifests, Helm chart, KServe, object-store repositories."""
