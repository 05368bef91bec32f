"""moderation: a real-time multimodal content-moderation stream processor.

Kafka posts in (text, images, both or neither), verdicts out (allow / review / block), with a review topic for
moderators and a dead-letter topic for input that cannot be processed.
"""

__version__ = "0.1.0"
