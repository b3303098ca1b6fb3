"""Remote hosts' ingresses: how the console, and only the console, reaches models on another host
(the README's "Models on other hosts answer only the console")."""
