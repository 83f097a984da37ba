"""Sans-I/O building blocks: connections, events in, commands out, the layer interface."""

from mediacache.sansio.commands import (
    CancelTimer,
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    OpenConnection,
    PauseReading,
    SendData,
    SetTimer,
    UnwatchDatagrams,
    WatchDatagrams,
)
from mediacache.sansio.connection import Connection
from mediacache.sansio.events import (
    ConnectionClosed,
    DatagramReceived,
    DataReceived,
    Event,
    OpenCompleted,
    Start,
    TimerFired,
)
from mediacache.sansio.layer import DataPlane, Layer, SessionContext, Sink

__all__ = [
    "CancelTimer",
    "CloseConnection",
    "Command",
    "Connection",
    "ConnectionClosed",
    "DataPlane",
    "DataReceived",
    "DatagramReceived",
    "EmitRecord",
    "Event",
    "Layer",
    "Log",
    "OpenCompleted",
    "OpenConnection",
    "PauseReading",
    "SendData",
    "SessionContext",
    "SetTimer",
    "Sink",
    "Start",
    "TimerFired",
    "UnwatchDatagrams",
    "WatchDatagrams",
]
