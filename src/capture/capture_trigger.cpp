// switchboard.capture(): the row trigger attached to a route's source table.
// Filters that cannot fail sit in the trigger's WHEN clause, so a rejected change never reaches
// this function; everything that could raise (mappings, other filters) is left to the
// translator, so the application's write never fails because of the integration.
#include "capture/enqueue.h"
#include "pg/boundary.h"

extern "C" {
#include "commands/trigger.h"
}

using namespace switchboard;

// No C++ object is alive in this function: its ereports jump straight to the caller.
SB_PG_FUNCTION(switchboard_capture)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR, (errmsg("switchboard.capture() must be called as an AFTER ... FOR EACH ROW trigger")));
	Trigger *trigger = td->tg_trigger;
	if (trigger->tgnargs < 1)
		ereport(ERROR, (errmsg("switchboard.capture() needs the route name as its argument")));
	const char *route = trigger->tgargs[0];
	if (CaptureSuppressed(route))
		return PointerGetDatum(nullptr);
	bool want_old = trigger->tgnargs > 1 && strcmp(trigger->tgargs[1], "old") == 0;
	TupleDesc desc = RelationGetDescr(td->tg_relation);

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		EnqueueChange(route, "insert", RowImage(td->tg_trigtuple, desc), (Datum) 0);
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		EnqueueChange(route, "update", RowImage(td->tg_newtuple, desc),
		              want_old ? RowImage(td->tg_trigtuple, desc) : (Datum) 0);
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		EnqueueChange(route, "delete", (Datum) 0, RowImage(td->tg_trigtuple, desc));
	return PointerGetDatum(nullptr);
}
