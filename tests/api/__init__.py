"""The decision API against a real uvicorn server, broker, flow and ClickHouse."""
