"""histoflow.preprocess"""
