"""SQLAlchemy 2.0 models of Hotline and the services (rules of the manuals) that act on them."""

from models.alarm import Alarm, AlarmKind
from models.base import Base
from models.agent import Agent, AgentEvent, AgentState
from models.call import Call, CallDirection, CallOutcome, CallState, CallTransfer, HangupParty, TransferKind
from models.callback import AttemptOutcome, Callback, CallbackAttempt, CallbackKind, CallbackMode, CallbackState, Satisfaction
from models.customer import Customer, CustomerPhone, CustomerProduct
from models.queue import Queue
from models.recording import Recording, RecordingState
from models.ticket import EventKind, Priority, Ticket, TicketEvent, TicketSequence, TicketStatus, TicketType, Urgency
from models.transcript import Channel, Transcript, TranscriptSegment, TranscriptState
from models.user import Role, User
from models import audit  # noqa: F401  (registers the audit-trail listener)

__all__ = [
    "Agent", "AgentEvent", "AgentState", "Alarm", "AlarmKind", "Base", "Call", "CallDirection", "CallOutcome", "CallState", "CallTransfer", "HangupParty", "TransferKind",
    "Queue", "AttemptOutcome", "Callback", "CallbackAttempt", "CallbackKind", "CallbackMode", "CallbackState",
    "Satisfaction", "Customer", "CustomerPhone",
    "CustomerProduct", "Recording", "RecordingState", "EventKind", "Priority", "Ticket", "TicketEvent",
    "TicketSequence", "TicketStatus", "TicketType", "Urgency", "Channel", "Transcript",
    "TranscriptSegment", "TranscriptState", "Role", "User",
]
