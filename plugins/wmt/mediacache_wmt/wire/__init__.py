"""Wire formats of Windows Media: ``mms`` (MMS over TCP/UDP) and ``asf`` (the media container)."""
