"""Everything that knows Faust and Kafka: the app and its agent, the changelog table, the
transport, tansu compatibility, topics, the worker command.
"""
