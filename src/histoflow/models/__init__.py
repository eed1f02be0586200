"""histoflow.models"""
