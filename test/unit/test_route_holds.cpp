// Unit tests for the routes the worker sets aside and the size of a route's set-based
// statements (delivery/route_holds.h).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "delivery/route_holds.h"

namespace switchboard {
namespace {

using Names = std::vector<std::string>;

TEST(RouteHolds, HoldExpiresAndALongerHoldStays)
{
	RouteHolds holds;
	holds.Hold("a", 1000);
	holds.Hold("a", 500); // a shorter hold does not cut the longer one
	holds.Hold("b", 200);
	EXPECT_EQ(holds.Held(100), (Names{"a", "b"}));
	EXPECT_EQ(holds.Held(200), (Names{"a"}));
	EXPECT_TRUE(holds.IsHeld("a", 999));
	EXPECT_FALSE(holds.IsHeld("a", 1000));
	EXPECT_EQ(holds.Held(1000), Names{});
}

TEST(RouteHolds, DeferredUntilServedAndNotWhileHeld)
{
	RouteHolds holds;
	holds.Defer("a", 1000);
	holds.Defer("b", 1000);
	holds.Defer("c", 200);
	holds.Hold("b", 100);
	EXPECT_EQ(holds.Deferred(50), (Names{"a", "c"})); // b is held: left out altogether
	EXPECT_EQ(holds.Deferred(100), (Names{"a", "b", "c"}));
	holds.Served("a");
	EXPECT_EQ(holds.Deferred(100), (Names{"b", "c"}));
	EXPECT_EQ(holds.Deferred(200), (Names{"b"})); // c's turn in queue order again
}

TEST(NextChunk, WholeClaimFirstThenWhatFits)
{
	EXPECT_EQ(NextChunk(0, 2000, 0, 10000), 2000u); // nothing learned: all of it
	EXPECT_EQ(NextChunk(100, 2000, 0, 10000), 100u);
	EXPECT_EQ(NextChunk(100, 30, 0, 10000), 30u);
	// 20 ms a row, 500 ms left: four fifths of it fit 20 rows.
	EXPECT_EQ(NextChunk(0, 100, 20, 500), 20u);
	// The next row would not fit: the rest waits.
	EXPECT_EQ(NextChunk(1, 1, 400, 90), 0u);
	EXPECT_EQ(NextChunk(10, 10, 0, 0), 0u);
	EXPECT_EQ(NextChunk(10, 0, 0, 500), 0u);
}

TEST(LearnChunk, HalvesOnTimeoutGrowsOnlyWellUnderTheLimit)
{
	EXPECT_EQ(LearnChunk(2000, true, 10000, 10000, 2000), 1000u);
	EXPECT_EQ(LearnChunk(1, true, 10000, 10000, 2000), 1u);
	EXPECT_EQ(LearnChunk(100, false, 1000, 10000, 2000), 200u); // a tenth of the limit: doubled
	EXPECT_EQ(LearnChunk(100, false, 3000, 10000, 2000), 100u); // doubled it could reach the limit
	EXPECT_EQ(LearnChunk(1500, false, 10, 10000, 2000), 2000u);
}

} // namespace
} // namespace switchboard
