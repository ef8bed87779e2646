// The one error boundary between C++ exceptions and Postgres' ereport/longjmp.
//
//  Postgres -> C++:  every SQL-callable function, trigger and the worker main run their body
//                    through Boundary(). A C++ exception is caught, its text copied into a
//                    static buffer, and only after the catch block has ended is ereport(ERROR)
//                    raised, so no C++ frame with a destructor is live when Postgres jumps.
//  C++ -> Postgres:  code that holds C++ objects calls Postgres through Guarded(), which turns
//                    an ereport into a thrown PgError after PG_END_TRY. The lambda given to
//                    Guarded must itself hold no objects with destructors.
//  Subtransaction:   an RAII internal subtransaction: a PgError thrown inside its scope rolls it
//                    back on unwinding, so one bad row does not end the caller's transaction.
//                    Between the error and the rollback only C++ code runs (as in plpgsql's
//                    exception blocks: copy the error, flush it, roll back).
#pragma once

#include <stdexcept>
#include <string>

#include "pg/prelude.h"

namespace switchboard {

// A Postgres error carried through C++ frames.
class PgError : public std::runtime_error {
public:
	PgError(int sqlerrcode, const std::string &message, std::string detail = "", std::string hint = "")
		: std::runtime_error(message), sqlerrcode(sqlerrcode), detail(std::move(detail)), hint(std::move(hint))
	{
	}
	int sqlerrcode;
	std::string detail;
	std::string hint;
};

// Convenience: a user-facing error with an explicit SQLSTATE.
[[noreturn]] void Fail(int sqlerrcode, const std::string &message, const std::string &detail = "",
                       const std::string &hint = "");

namespace detail {
struct CaughtError {
	int sqlerrcode;
	bool caught;
};
void Capture(CaughtError *out, const std::exception *e) noexcept;
[[noreturn]] void Rethrow(const CaughtError *err);
void GuardedCall(void (*fn)(void *), void *arg); // throws PgError

template <typename F>
bool RunCaught(F &body, Datum *result, CaughtError *err) noexcept
{
	try {
		*result = body();
		return true;
	} catch (const std::exception &e) {
		Capture(err, &e);
	} catch (...) {
		Capture(err, nullptr);
	}
	return false;
}
} // namespace detail

// Postgres -> C++. Use as: PG_FUNCTION_INFO_V1(f); Datum f(PG_FUNCTION_ARGS) { return Boundary([&] { ... }); }
template <typename F>
Datum
Boundary(F &&body)
{
	Datum result = 0;
	detail::CaughtError err{0, false};
	if (!detail::RunCaught(body, &result, &err))
		detail::Rethrow(&err); // ereport(ERROR) with no C++ object alive in this frame
	return result;
}

// C++ -> Postgres: runs fn; a Postgres error becomes a thrown PgError.
template <typename F>
void
Guarded(F &&fn)
{
	detail::GuardedCall([](void *p) { (*static_cast<F *>(p))(); }, &fn);
}

// Usage: { Subtransaction sub; ...work that may throw PgError...; sub.Commit(); }
class Subtransaction {
public:
	Subtransaction();
	~Subtransaction(); // rolls back unless committed
	void Commit();
	Subtransaction(const Subtransaction &) = delete;
	Subtransaction &operator=(const Subtransaction &) = delete;

private:
	MemoryContext memory_context_;
	void *resource_owner_;
	bool done_ = false;
};

} // namespace switchboard
