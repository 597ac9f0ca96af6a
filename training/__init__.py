"""batcomputer.training"""
