"""histoflow.train"""
