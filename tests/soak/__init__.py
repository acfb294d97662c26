"""``make soak``: the whole system on the real RabbitMQ for a while, with churn, kills and drops.

Run it as ``PYTHONPATH=tests python -m soak --seconds N`` (``make soak SOAK_S=N``); docs/soak.md
says what it runs, how it samples and what makes it fail.
"""
