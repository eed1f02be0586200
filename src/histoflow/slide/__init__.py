"""histoflow.slide"""
