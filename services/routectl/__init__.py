"""Route control: per-VIP announce/withdraw decisions on one node, spoken to BGP peers by ExaBGP.

See docs/routectl.md. Modules: :mod:`.settings`, :mod:`.decide` (gates, hysteresis, damping: pure),
:mod:`.speaker` (ExaBGP process and its API bridge), :mod:`.bridge` (the API process ExaBGP runs),
:mod:`.app` (the service on the vgw runtime), :mod:`.main` (``vgw-routectl``).
"""
