"""histoflow.predict"""
