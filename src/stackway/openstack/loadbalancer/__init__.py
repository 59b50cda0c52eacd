"""Services of type LoadBalancer on Octavia: plan (pure) → diff (pure) → act (I/O), as OCCM users expect it."""
