"""QuickTime format plugin for mediacache: standard RTSP with RTP/RTCP."""

__version__ = "0.1.0"
