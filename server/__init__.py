"""batcomputer.server"""
