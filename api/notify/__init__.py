"""Notifications (CONTRACT §4): subscriptions fed from the events outbox, webhooks and email."""
