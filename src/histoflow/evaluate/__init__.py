"""histoflow.evaluate"""
