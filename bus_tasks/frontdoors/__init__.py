"""Front doors: other wires into ``bus_tasks.rpc`` (STOMP 1.2 in VDSM's dialect, HTTP), sharing one bridge."""
