"""The decision API (``fraud serve``): card authorisations answered in-line by the flow.

``replies`` routes the flow's answers on ``fraud-decisions`` back to waiting requests;
``app`` is the FastAPI application (auth, limits, deadline, fallback, health, metrics).
"""
