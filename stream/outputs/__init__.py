"""What leaves a worker: the Prometheus collector, Redis key names and the one way to connect.
Alerting (`stream.alerting`) and the wallboard (`stream.wallboard`) sit in this layer too.
"""
