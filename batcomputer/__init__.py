"""Batcomputer: versioned scikit-learn models on Kubernetes."""
