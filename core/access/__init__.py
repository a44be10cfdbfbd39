"""Who may connect: browser origins, and the client's address behind trusted proxies."""
