"""Front doors: other wires into ``bus_tasks.rpc`` (STOMP 1.2, VDSM's dialect)."""
