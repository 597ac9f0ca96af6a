"""batcomputer.operator"""
