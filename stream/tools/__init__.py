"""Tools around the worker: replay of a recording through the same pipeline, the demo, the docs
generator. (The traffic generator, `stream.generator`, and the embedded servers,
`stream.embedded`, are tools too.)
"""
