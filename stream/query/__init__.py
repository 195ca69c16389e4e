"""Reading the state: rolling windows over event-time buckets, and the whole contact center
from per-partition views. Pure, like the domain.
"""
