"""Mail notifications to each tenant's admin contacts (SPEC §7): first detection, a week before
throttling starts, each stage change, blocking start and remediation.

Every event has a stable key; :meth:`Store.claim_notification` records it once across restarts
and nodes, and only the node whose claim succeeded sends it.
"""

from drossel.notify.service import Sent, due_events, run_notifier, scan_and_notify

__all__ = ["Sent", "due_events", "run_notifier", "scan_and_notify"]
