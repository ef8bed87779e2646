// Included last by every server-free source file (connectors, delivery, http,
// config/host_policy.cpp): they are built and unit-tested without a server, so neither they
// nor any header they include may pull in postgres.h. Only sources carry it, since code that
// runs inside Postgres includes the server-free headers too (after postgres.h).
#pragma once

#ifdef POSTGRES_H
#error "server-free code must not include postgres.h (see src/server_free.h)"
#endif
