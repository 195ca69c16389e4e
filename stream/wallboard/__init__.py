"""The live wallboard web page (``cxstream wallboard``)."""
