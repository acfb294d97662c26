"""The kombu transport: RabbitMQ (``amqp://``), Redis (``redis://``) and ``memory://``."""
