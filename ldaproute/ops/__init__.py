"""
Running it: metrics, the access log, the observer that feeds both, lifecycle (reload, drain, workers), the demo.
"""
